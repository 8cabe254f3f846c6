-- Satisfaction-survey scores (contract 10.2), one row per response and category rated, from surveys.responses.
CREATE SCHEMA IF NOT EXISTS reporting;

CREATE TABLE reporting.survey_scores (
    response_id  text        NOT NULL,
    category     text        NOT NULL,
    score        smallint    NOT NULL CHECK (score BETWEEN 1 AND 5),
    answered_at  timestamptz NOT NULL,
    answered_day date        NOT NULL,   -- local date (Asia/Shanghai): the report's period is on it
    region_code  text        NOT NULL,
    PRIMARY KEY (response_id, category)  -- a response delivered twice adds nothing
);
CREATE INDEX survey_scores_day ON reporting.survey_scores (answered_day);
