"""Meta-architectures: whole models assembled from backbone, neck and heads."""
