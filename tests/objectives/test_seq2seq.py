"""The seq2seq objective's scores are the field's: BLEU and chrF equal the `sacrebleu` package's corpus scores on
the same detokenized outputs."""

from __future__ import annotations

import pytest
import sacrebleu

from dlforge.objectives.seq2seq import text_metrics

# Outputs as a translation model writes them: punctuation, contractions, numbers, casing and a miss or two,
# which the 13a tokenizer splits as sacrebleu does.
REFERENCES = [
    "Le serveur ne répond pas.",
    "Impossible d'ouvrir le fichier « %s » : permission refusée.",
    "Voulez-vous vraiment supprimer ces 3 éléments ?",
    "L'opération a réussi.",
    "Annuler",
]
TRANSLATIONS = [
    "Le serveur ne répond plus.",
    "Impossible d'ouvrir le fichier « %s » : accès refusé.",
    "Voulez-vous supprimer ces 3 éléments ?",
    "L'opération a réussi.",
    "annuler",
]


def test_bleu_and_chrf_equal_sacrebleus_corpus_scores():
    metrics = text_metrics()
    for start in (0, 2):  # two updates, as two batches: the score is over the corpus, not a mean of batches
        end = start + 2 if start == 0 else len(REFERENCES)
        metrics["bleu"].update(TRANSLATIONS[start:end], [[reference] for reference in REFERENCES[start:end]])
        metrics["chrf"].update(TRANSLATIONS[start:end], [[reference] for reference in REFERENCES[start:end]])
    bleu = sacrebleu.corpus_bleu(TRANSLATIONS, [REFERENCES], tokenize="13a")
    # torchmetrics' chrF smooths n-gram orders without matches as sacrebleu's eps_smoothing (chrF's original
    # definition; sacrebleu's default leaves such orders out): a difference in the 4th decimal here
    chrf = sacrebleu.corpus_chrf(TRANSLATIONS, [REFERENCES], eps_smoothing=True)
    assert 30 < bleu.score < 90  # neither trivially 0 nor 100
    assert float(metrics["bleu"].compute()) == pytest.approx(bleu.score, abs=1e-4)
    assert float(metrics["chrf"].compute()) == pytest.approx(chrf.score, abs=1e-3)  # float32
