"""Tools over finished builds: the reader and the PyTorch dataset, splits, the HTML report, the
audit sheet, text statistics, and the cost estimate of builds not yet run."""
