"""ETL stages by the name a pipeline config uses for them. Add a stage here to make it configurable."""
from .base import Stage

STAGES: dict[str, type[Stage]] = {
}
