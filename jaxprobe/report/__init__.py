"""Tables, plots and the self-contained HTML report, from scores only."""
