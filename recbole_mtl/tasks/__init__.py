"""One module per task: its head, loss and metrics. A task never imports another task."""

from recbole_mtl.tasks.category import CategoryHead, CategoryTask
from recbole_mtl.tasks.interest import InterestHead, InterestTask
from recbole_mtl.tasks.sequence import SequenceHead, SequenceTask

__all__ = [
    "CategoryHead", "CategoryTask", "InterestHead", "InterestTask", "SequenceHead", "SequenceTask",
]
