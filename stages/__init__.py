"""One module per pipeline stage: thin glue that reads params, calls the library, writes outputs."""
