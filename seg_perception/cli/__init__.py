"""The `seg-perception` command: one subcommand per job (train, evaluate, export, demo, bags...)."""
