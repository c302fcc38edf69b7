"""The baseline a careful user tries first: TF-IDF 1-2-grams + logistic regression (scikit-learn)
on the same IMDB split as the encoders; a minute on a laptop. Same results.json and
confusion.png as the other sentiment recipes."""

from ..sentiment import SentimentDataConfig, SentimentRunConfig, TfidfConfig, run_sentiment_recipe

NAME = "imdb-tfidf"
DESCRIPTION = "baseline: TF-IDF 1-2-grams + logistic regression on the same IMDB split (~1 min)"


def default_config() -> SentimentRunConfig:
    return SentimentRunConfig(recipe=NAME, mode="tfidf", data=SentimentDataConfig(source="imdb"),
                              tfidf=TfidfConfig(ngram_max=2, min_df=2, C=4.0, sublinear_tf=True))


def run(cfg: SentimentRunConfig, run_dir, resume: bool = False) -> dict:
    return run_sentiment_recipe(cfg, run_dir, resume=resume)
