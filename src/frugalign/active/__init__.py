"""Active querying: the label ledger and the annotators it records."""
