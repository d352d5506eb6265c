"""The `i2vd` command and its subcommands."""
