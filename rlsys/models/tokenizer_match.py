"""Whether two models read token ids alike: a teacher grades the student's tokens by id, so a teacher with another
tokenizer would grade different text than the student wrote."""
from __future__ import annotations


def tokenizer_difference(student, teacher) -> str | None:
    """What differs between two tokenizers' vocabularies and special tokens, in a few words; None when nothing does."""
    mine, theirs = student.get_vocab(), teacher.get_vocab()
    if len(mine) != len(theirs):
        return f"{len(theirs)} tokens against the student's {len(mine)}"
    moved = sorted(token for token, i in mine.items() if theirs.get(token) != i)
    if moved:
        return f"{len(moved)} tokens with other ids (e.g. {moved[0]!r}: {theirs.get(moved[0])} against {mine[moved[0]]})"
    for name in ("eos_token_id", "pad_token_id", "bos_token_id"):
        if getattr(student, name) != getattr(teacher, name):
            return f"{name} {getattr(teacher, name)} against the student's {getattr(student, name)}"
    return None


def check_same_tokenizer(student, student_path: str, teacher_path: str) -> None:
    """One line naming both models when the teacher's tokenizer differs from the student's (loaded already)."""
    from rlsys.errors import ConfigError
    from rlsys.models.builders import check_model_dir, load_tokenizer

    check_model_dir(teacher_path)
    difference = tokenizer_difference(student, load_tokenizer(teacher_path))
    if difference:
        raise ConfigError(f"the teacher {teacher_path} does not share the student's tokenizer ({student_path}): "
                          f"{difference}. A teacher grades the student's tokens by id: pick a teacher of the "
                          f"student's family (same tokenizer), or distil offline (distill.on_policy=false), which "
                          f"passes text.")
