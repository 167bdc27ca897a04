"""The `jobs` command (jobs.cli.main:main): its commands, the stage options they share, and the tables and
progress it prints."""
