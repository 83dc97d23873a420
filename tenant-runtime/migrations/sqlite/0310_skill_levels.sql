-- Skill proficiency levels and optional skills (issue 5), SQLite dialect (kept in step with
-- ../postgres/0310_skill_levels.sql). Levels run 1 (basic) to 5 (expert), as routing::MAX_LEVEL.

-- An agent's proficiency in a skill, set by admins (NULL: no level; such a skill satisfies only
-- requirements without a minimum).
ALTER TABLE user_skills ADD COLUMN level INTEGER CHECK (level BETWEEN 1 AND 5);

-- A category's requirement per skill: a minimum level (NULL: any) that routing relaxes after
-- routing.relax_levels_after_secs, and whether the skill is optional (dropped after
-- routing.drop_optional_after_secs).
ALTER TABLE category_skills ADD COLUMN min_level INTEGER CHECK (min_level BETWEEN 1 AND 5);
ALTER TABLE category_skills ADD COLUMN optional INTEGER NOT NULL DEFAULT 0;
