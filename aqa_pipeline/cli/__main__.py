"""`python -m aqa_pipeline.cli ...` runs the `aqa` tool."""

from aqa_pipeline.cli import main

main()
