"""Run records, leaderboard tables, comparisons and later evaluations."""
