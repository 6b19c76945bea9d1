# Ablation "CapeNext w/o LW" (Tables 2 and 4): both DSFR gates replaced by the constant 1
# (upstream SimpleMultiModalModuleConstantWeight). The gate layers are not built: 1,026 fewer parameters.
_base_ = ["./capenext.py"]

fusion = dict(gates=False)
