"""The guard: live metrics per version, the decision rule, rollback, staged ramps, feedback.

Plain Python with no I/O except `monitor` (an asyncio loop acting through injected callbacks)
and `webhook` (stdlib HTTP in a thread):

- `policy`: GuardPolicy from a release's `guard.*` metadata;
- `histogram`, `stats`, `window`, `live`: counters on the request path, per version and per
  release window;
- `sequential`: the anytime-valid test on how errors split between the arms;
- `decision`: decide(window, policy, now) -> insufficient data, healthy, breach, ready;
- `ramp`: staged ramps stored in the flag's metadata, as pure flag edits;
- `offline_gate`: the manifest metrics gate on starting a rollout or ramp;
- `feedback`: the prediction log that joins true labels to live accuracy;
- `history`, `monitor`, `webhook`: the loop that acts, and what it remembers and posts.
"""

from gateway.guard.decision import Decision, DecisionKind, Trigger, decide
from gateway.guard.errors import (
    GuardError,
    InvalidPolicy,
    InvalidRamp,
    OfflineGateRefused,
    RampInProgress,
    RampNotFound,
    WebhookFailed,
)
from gateway.guard.feedback import FeedbackItem, FeedbackResult, PredictionLog
from gateway.guard.history import DecisionHistory, RecordedDecision
from gateway.guard.live import GuardStats
from gateway.guard.monitor import GuardMetricsSink, GuardMonitor, GuardTarget
from gateway.guard.offline_gate import OfflineComparison, check_offline, compare_offline
from gateway.guard.policy import GuardPolicy
from gateway.guard.ramp import RampAction, RampState, next_action, ramp_state
from gateway.guard.sequential import ErrorSplitTest
from gateway.guard.stats import ErrorKind, VersionStats
from gateway.guard.webhook import post_webhook, webhook_poster
from gateway.guard.window import Arm, ReleaseWindow

__all__ = [
    "Arm",
    "Decision",
    "DecisionHistory",
    "DecisionKind",
    "ErrorKind",
    "ErrorSplitTest",
    "FeedbackItem",
    "FeedbackResult",
    "GuardError",
    "GuardMetricsSink",
    "GuardMonitor",
    "GuardPolicy",
    "GuardStats",
    "GuardTarget",
    "InvalidPolicy",
    "InvalidRamp",
    "OfflineComparison",
    "OfflineGateRefused",
    "PredictionLog",
    "RampAction",
    "RampInProgress",
    "RampNotFound",
    "RampState",
    "RecordedDecision",
    "ReleaseWindow",
    "Trigger",
    "VersionStats",
    "WebhookFailed",
    "check_offline",
    "compare_offline",
    "decide",
    "next_action",
    "post_webhook",
    "ramp_state",
    "webhook_poster",
]
