"""Where the Fineract sample responses are: the copy kept in the repository (tests/fineract_samples,
so a fresh clone tests on its own), or ``CONVO_FINERACT_SAMPLES`` to check another set."""
import os
from pathlib import Path

SAMPLES = Path(os.environ.get("CONVO_FINERACT_SAMPLES") or Path(__file__).resolve().parents[1] / "fineract_samples")
