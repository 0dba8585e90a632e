"""The embedding API (``Runtime``) and what builds it: a façade over one controller per noun.

``facade`` is the class callers hold; ``work_api`` and ``service_api`` are its
methods, each handed to a controller (``sessions``, ``tasks``, ``principals``,
``node``; approvals go to ``aicli.approval_desk``). ``composition`` builds the
parts and declares their start order once; ``supervision`` is the one way to
the supervisor; ``processes`` finds and ends what dead runs left behind.
"""

from aicli.runtime.facade import Runtime
from aicli.runtime.principals import REVOKED_PENDING
from aicli.runtime.processes import owner_prefix

__all__ = ["REVOKED_PENDING", "Runtime", "owner_prefix"]
