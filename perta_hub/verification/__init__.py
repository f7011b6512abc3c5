"""``perta-hub verify``: check what an output (folder or Hub repo) claims about itself, in three levels.

- integrity: the files' sha256 against the record (and the Hub's LFS sha256), the indexes against the files
  present, the card against ``perta_config.json``, the inputs pinned by commit;
- provenance (``recompute=True`` or ``sample=N``): the tensors recomputed from the recorded inputs at their
  recorded revisions and compared bit for bit (:mod:`perta_hub.verification.provenance`);
- privacy: forget-derived repos private, no forget data quoted in the card (:mod:`perta_hub.verification.privacy`).
"""

from perta_hub.verification.api import verify
from perta_hub.verification.result import Check, VerifyResult

__all__ = ["Check", "VerifyResult", "verify"]
