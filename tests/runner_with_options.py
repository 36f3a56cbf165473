"""A runner that, like Beam's DaskRunner, registers its own pipeline options only when its module is imported."""

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineRunner


class ClusterOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--cluster_address", help="Where the cluster's scheduler listens.")


class ClusterRunner(PipelineRunner):
    """Never runs anything: only its options are tested."""
