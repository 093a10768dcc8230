//! Call detail records: one row per call in SQLite, written off the call path.
