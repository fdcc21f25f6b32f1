"""One short recipe per method; each says what it does per step and hands the loop to the engine."""
