"""Data: labelled text tables → normalised splits (``dataset``, ``text``) → sparse features
(``features``, ``featureset``) → mini-batches for ``embedding_bag`` (``batches``)."""
