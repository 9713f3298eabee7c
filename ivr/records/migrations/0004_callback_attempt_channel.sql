-- Call-backs (issue 18): the agent leg (its ChannelId) and the controller node of every
-- attempt, so that a controller starting or taking over asks the switch whether an attempt
-- left 'dialling' is still there (ringing or bridged) before it reopens the call-back.
-- Portable SQL (SQLite and PostgreSQL).

ALTER TABLE callback_attempts ADD COLUMN channel TEXT;
ALTER TABLE callback_attempts ADD COLUMN node TEXT;
