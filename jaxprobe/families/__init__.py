"""Model families: the only code that knows a checkpoint family (DESIGN.md). ``registry`` lists them."""
