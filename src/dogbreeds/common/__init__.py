"""Small single-concern helpers every layer may use: atomic files, redaction, progress, the
stage shell. They import nothing else of the package."""
