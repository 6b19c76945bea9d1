# Ablation "CapeNext w/o DSFR" (Table 2): DSFR replaced by two ReLU-activated Linear(512, 512)
# projections of the (HCMI-refined) image and class embeddings, added to the joint embeddings.
_base_ = ["./capenext.py"]

fusion = dict(dsfr=False)
