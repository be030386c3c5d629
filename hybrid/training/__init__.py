"""Training: end-to-end rollout training of closure ensembles on any system (`fit`),
its loss, checkpoints with exact resume, and member-parallel sharding."""

from ._checkpoint import read_log as read_log
from ._fit import curriculum_horizon as curriculum_horizon
from ._fit import default_optimizer as default_optimizer
from ._fit import fit as fit
from ._fit import member_factory as member_factory
from ._loss import Windows as Windows
from ._loss import rollout_loss as rollout_loss
from ._sharding import MEMBERS as MEMBERS
from ._sharding import constrain_members as constrain_members
from ._sharding import member_devices as member_devices
from ._sharding import member_parallel as member_parallel
from ._sharding import members_mesh as members_mesh
from ._sharding import replicate as replicate
from ._sharding import shard_members as shard_members
