from cape_bench.registry import METHODS

METHODS.register(
    "support-copy",
    "cape_bench.methods.support_copy.model:SupportCopy",
    aliases=("copy",),
    support="keypoints",
    summary="copies the support keypoints (normalised to the support bbox) into the query bbox",
)
