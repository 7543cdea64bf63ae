"""Studies that use the library like a user would: the headline table, the position
study, trained-vs-base retrievers, and the demo job. Each writes where its caller says."""
