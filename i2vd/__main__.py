from i2vd.cli.commands import program

program()
