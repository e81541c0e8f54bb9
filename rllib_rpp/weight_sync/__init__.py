"""Weight sync, both ends and the driver's side, in one room: `engines` (no Ray) holds the
weight-transfer engines' learner end (senders) and runner end (the gloo engine registered with
vLLM); `driver` (Ray) orders one sync: runners' receives first, then learner rank 0's broadcast,
and the object-store path when a transfer fails. The learner sends through `engines.SENDERS`, the
vLLM sampler receives through vLLM's engine API. Imports nothing itself (the Ray-free parts stay
Ray-free)."""
