"""Evaluation: gold reward and KL on gold-oracle tasks."""
