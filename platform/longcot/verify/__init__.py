"""Verification: check the final answers of traces (parsed by ``longcot.traces``), curate and export.

``verify_records`` is what other stages call (eval, DLCoT); ``match_answers`` is the timeout-safe
batch form of ``math.answers_match``. The ``verify`` stage itself lives in ``verify.stage``.
"""

from longcot.verify.config import VerifyConfig
from longcot.verify.verdicts import VERDICTS, match_answers, verify_records

__all__ = ["VERDICTS", "VerifyConfig", "match_answers", "verify_records"]
