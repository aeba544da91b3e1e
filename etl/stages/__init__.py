"""ETL stages by the name a pipeline config uses for them. Add a stage here to make it configurable."""
from .base import Stage
from .language import Language
from .pii import Pii
from .toxicity import Toxicity
from .shuffle_write import ShuffleAndWrite
from .tokenize import Tokenize
from .exact_dedup import ExactDedup
from .fix_encoding import FixEncoding
from .minhash_dedup import MinHashDedup
from .quality import Quality
from .decontaminate import Decontaminate

STAGES: dict[str, type[Stage]] = {
    Language.name: Language,
    Pii.name: Pii,
    Toxicity.name: Toxicity,
    Tokenize.name: Tokenize,
    ShuffleAndWrite.name: ShuffleAndWrite,
    FixEncoding.name: FixEncoding,
    ExactDedup.name: ExactDedup,
    MinHashDedup.name: MinHashDedup,
    Quality.name: Quality,
    Decontaminate.name: Decontaminate,
}
