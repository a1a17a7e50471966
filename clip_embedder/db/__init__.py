"""The database: the embedded server's lifecycle, versioned migrations, the COPY codec and one repository per
concern (images, items and tags, spaces and vectors, lexical search, ingest tasks), reached through `Store`.
No SQL lives outside this package."""
