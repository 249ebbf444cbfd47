"""What training minimises: the loss functions (:mod:`.losses`), BENet's multitask objective
(:mod:`.benet`), the ABAW-style multitask pieces (:mod:`.multitask`: CCC, task weights,
the task discriminator; :mod:`.distillation`), knowledge amalgamation (:mod:`.amalgamation`)
and the extras protocol that adds a method's terms to a training step (:mod:`.extras`)."""
