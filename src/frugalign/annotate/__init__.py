"""The annotation app: people label the pairs the trainer is unsure of, through a web page or its JSON API."""
