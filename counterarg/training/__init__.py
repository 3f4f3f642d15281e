"""Training: the Trainer (a BiEncoder plus optimizer, mining, pools; one epoch's work: trainer) and
train(), the epoch loop and run folder (loop). Above evaluation; never imports Ray or the sweep package."""
