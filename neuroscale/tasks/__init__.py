"""The built-in tasks of the pipeline, one file each."""
