"""fnl-heads: RPN, box and DensePose heads, the DensePose chart predictor and losses for FnL."""
