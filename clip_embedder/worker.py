"""`python -m clip_embedder.worker`: runs queue workers (the code is in `clip_embedder.intake.worker`)."""
import sys

from clip_embedder.intake.worker import main

if __name__ == "__main__":
    sys.exit(main())
