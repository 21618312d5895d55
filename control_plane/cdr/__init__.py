"""CDRs: the call detail records Cloudonix sends, listed and filtered."""
