"""The model repository contract shared by builders and service: the manifest and card schema, how a
repository version is verified, how raw columns become graph feeds, what a model's output is, and how
ensembles combine member outputs. Depends on pydantic and numpy only."""
