"""The database: engine, every table, migrations, subscriber state."""
