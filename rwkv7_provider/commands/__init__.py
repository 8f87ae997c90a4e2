"""The everyday `rwkv7-provider` commands (check, info, init-config); `cli.py` dispatches to them.

Each module is one command: `build_parser(parser)` declares its arguments and `main(argv)` returns the exit
code. They sit above everything else and only compose the public pieces below them.
"""
