-- Token exchange: the actor the company's token named (`agent:alice`).
ALTER TABLE audit ADD COLUMN act TEXT;
