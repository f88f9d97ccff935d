"""The tasks the entry scripts in `src/` run: each a `main(cfg)` started by `dlforge.cli.run`."""
