"""The KA paper's teachers: classifier models, their files and teachers as frozen feature
extractors (:mod:`.models`), and the linear probe that checks what a teacher knows on the
student's images (:mod:`.probe`, CLI ``python -m training.teachers.probe``). Teacher
training is ``python -m training.train_teacher``."""
