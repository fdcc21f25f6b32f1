"""The training methods several commands share, below the recipes: SFT, the DPO family's trainer (pair
scoring, references, pair losses and metrics), reward-model training and scoring, RLOO, and the AIHF/SPIN
iterations. A recipe is a command: it reads its files, calls these, saves and summarises."""
