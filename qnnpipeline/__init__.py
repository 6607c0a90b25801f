"""qnnpipeline: the replication's pipeline around the `qnnlib` core.

The papermill notebook runner (`notebooks`), params.yaml and `--set` overrides
(`params`), the `qnn-train` command (`cli`), finished runs on disk (`runs`), the claims
table (`claims`), the figure index (`viz`) and the results folders of the checkout
(`paths`). The core (`qnnlib`) never imports this package.
"""
