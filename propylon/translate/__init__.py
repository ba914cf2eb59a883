"""Translation: resources -> per-Gateway IR (selection, delegation, policy attachment,
invalid-route replacement, statuses). Pure functions; see ``translator.py`` for the steps."""

from propylon.translate.translator import Translation, translate, translate_with_issues

__all__ = ["Translation", "translate", "translate_with_issues"]
