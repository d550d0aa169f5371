"""Data subcommands (convert, vis, ...) are registered here."""
