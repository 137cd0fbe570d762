"""Stage 4 and 5 of an offboarding run: deletes, permanent deletes, and the completion of our
own half-made purges.

A purge needs retention, notice, no veto and (optionally) approval (`notice.py`), and passes
the gate (fail-closed, `max_purge_per_run`). Right after our DELETE /users/{id} the deleted
item may not have replicated: a 404 on the permanent delete is retried with a bounded
backoff, and a purge still invisible stays "deleted, purge pending" for the next run.
"Purged" is recorded only on a 204, or when direct reads find the user neither in users nor
in deleted items (never because a list did not show it).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from agent.graph import lifecycle
from agent.graph.lifecycle import ChangeRefused
from agent.rules import severity_of
from agent.run import Subject
from jobs.offboarding.gate import Gate
from jobs.offboarding.planning import DeletedPlan, UserPlan, leaver_reason

if TYPE_CHECKING:
    from jobs.offboarding.execute import OffboardingRun

# after DELETE /users/{id} the deleted item may take a while to replicate: the permanent
# delete is retried this often (waits 1, 2, 4, 8 s); still 404 -> the next run completes it
PURGE_ATTEMPTS = 5
# "gone" from both users and deleted items counts as evidence only this long after our
# delete (a read right after it may hit a replica that has seen neither)
LAG_GRACE = timedelta(hours=1)


def _subject(user: lifecycle.DirectoryUser) -> Subject:
    return Subject("user", user.id, user.upn)


def _date_or_none(moment: datetime | None) -> str | None:
    return moment.date().isoformat() if moment is not None else None


class Purger:
    def __init__(self, job: OffboardingRun) -> None:
        self.job = job

    def _purge_blocked(self, user_id: str, subject: Subject, action: str,
                       the_gate: Gate) -> bool:
        """Notice, veto, approval, fail-closed and the purge limit; True if stopped here."""
        check = self.job.purges.get(user_id)
        if check is None or not check.may_purge:
            if check is not None and check.status == "vetoed":
                self.job.run.finding("OFF-VETOED", severity_of("OFF-VETOED"), subject,
                                     check.reason(self.job.policy.purge_notice_days))
            reason = check.reason(self.job.policy.purge_notice_days) if check is not None \
                else "not announced in the veto window yet"
            self.job.run.skip(action, subject, f"not purged: {reason}")
            return True
        stop = self.job.stopped(the_gate, "max_purge_per_run")
        if stop is not None:
            self.job.run.skip(action, subject, stop)
            return True
        return False

    async def purge_user(self, p: UserPlan, the_gate: Gate) -> None:
        user = p.user
        if user.id in self.job.tally.failed:
            return
        if self._purge_blocked(user.id, _subject(user), "delete-user", the_gate):
            return
        if p.refused_on is not None:
            self.job.refused_before(user, "delete", "delete-user", p.refused_on)
            return
        # the last gate: the account as it is now, not as it was at the start of the run
        fresh = await lifecycle.get_user(self.job.ctx.graph, user.id)
        if fresh is None:
            self.job.run.warn(f"{user.upn} disappeared during the run (deleted by someone "
                              "else?); the next run completes its purge if it is due")
            return
        if fresh.enabled:
            self.job.note("reenabled", user.id)
            self.job.reenabled(fresh, "enabled again during this run")
            return
        if leaver_reason(fresh, user.id in self.job.group_members, self.job.now) is None:
            self.job.run.skip("delete-user", _subject(fresh),
                              "no longer a leaver (leave date cleared or moved): not purged")
            return
        assert p.inactive_since is not None and p.purge_date is not None
        since = p.inactive_since.astimezone(self.job.ctx.tz).date().isoformat()
        check = self.job.purges[user.id]
        with self.job.run.change(
                "delete-user", _subject(user),
                f"inactive since {since}; retention of {self.job.policy.retention_months} "
                f"months ended {p.purge_date.isoformat()}; announced on "
                f"{check.announced_on.isoformat()}",
                before={"accountEnabled": False, "inactiveSince": since}) as ch:
            if ch.execute:
                self.job.intent(user.id, "delete")
                try:
                    result = await lifecycle.delete_user(self.job.ctx.graph, user.id)
                except ChangeRefused as exc:
                    self.job.note("purge-failed", user.id, error=str(exc)[:300])
                    self.job.refuse(user, "delete", exc, ch)
                    return
                self.job.note("deleted", user.id, request_id=result.request_id,
                              already_gone=result.already_gone)
                ch.done(request_id=result.request_id, after={"inDeletedItems": True},
                        note="already gone" if result.already_gone else None)
        if ch.execute and not ch.ok:
            return
        await self._purge_deleted(user.id, _subject(user), "step 2 of 2 of the purge",
                                  just_deleted=True)

    async def complete(self, d: DeletedPlan, the_gate: Gate) -> None:
        subject = Subject("user", d.user.id, d.user.upn)
        if d.protected:
            self.job.run.skip("purge-user", subject,
                              "protected: protected_users or emergency-access account")
            return
        if d.ours:
            veto = self.job.decisions.veto(d.user.id, self.job.today)
            if veto is not None:
                self.job.run.finding("OFF-VETOED", severity_of("OFF-VETOED"), subject,
                                     f"vetoed by {veto.by or 'unknown'}: {veto.reason or ''}")
                self.job.run.skip("purge-user", subject, "not purged: a veto stands")
                return
            if the_gate.fail_closed:
                self.job.run.skip("purge-user", subject, "a protection entry matches no user: "
                                  "no change is made in this run")
                return
        elif self._purge_blocked(d.user.id, subject, "purge-user", the_gate):
            return
        if not d.ours and not self.job.ctx.dry_run:
            # deleted by someone else: record what the overview needs before purging
            user, record = d.user, self.job.ledger.get(d.user.id)
            if record is None or record.inactive_since is None:
                self.job.note("inactive", user.id, since=user.leave_date, source="leave-date",
                              upn=user.upn, name=user.display_name,
                              leave_date=_date_or_none(user.leave_date))
            # not deleted by a run of ours: no delete run id
            self.job.ledger.record("deleted", user.id, at=self.job.now, run_id=None,
                                   deleted_at=user.deleted_at or self.job.now,
                                   source="found in deleted items")
        await self._purge_deleted(d.user.id, subject, d.why, just_deleted=False)

    async def _purge_deleted(self, user_id: str, subject: Subject, reason: str, *,
                             just_deleted: bool) -> None:
        with self.job.run.change("purge-user", subject,
                                 f"permanently delete from deleted items ({reason})",
                                 before={"inDeletedItems": True}) as ch:
            if ch.execute:
                self.job.intent(user_id, "purge")
                result = await lifecycle.purge_deleted_user(self.job.ctx.graph, user_id)
                wait = 1.0
                for _ in range(PURGE_ATTEMPTS - 1 if just_deleted else 0):
                    if not result.already_gone:
                        break
                    # 404 right after our delete: not replicated yet, not "gone"
                    await self.job.ctx.graph.sleep(wait)
                    wait *= 2
                    result = await lifecycle.purge_deleted_user(self.job.ctx.graph, user_id)
                if not result.already_gone:
                    self.job.note("purged", user_id, request_id=result.request_id, source="purged")
                    ch.done(request_id=result.request_id, after={"inDeletedItems": False})
                elif not just_deleted and await self._gone(user_id):
                    self.job.note("purged", user_id, request_id=result.request_id,
                                  source="verified gone")
                    ch.done(request_id=result.request_id, after={"inDeletedItems": False},
                            note="already gone: neither in users nor in deleted items")
                else:
                    ch.action.reason += ("; deleted, the deleted item is not visible yet "
                                         "(replication): the next run completes the purge")
        if ch.ok:
            self.job.tally.purged_ids.add(user_id)

    async def _gone(self, user_id: str) -> bool:
        """Evidence of a purge: direct reads answer 404 for the user and the deleted item."""
        if await lifecycle.get_user(self.job.ctx.graph, user_id) is not None:
            return False
        return await lifecycle.get_deleted_user(self.job.ctx.graph, user_id) is None

    async def vanished(self, user_id: str, upn: str | None, the_gate: Gate) -> None:
        """Our purge pending, the user listed neither in users nor in deleted items: a list
        can miss an object (a lost page, lag); only direct reads are evidence."""
        subject = Subject("user", user_id, upn)
        record = self.job.ledger.get(user_id)
        if the_gate.fail_closed or record is None:
            return
        if await lifecycle.get_user(self.job.ctx.graph, user_id) is not None:
            self.job.run.warn(f"{upn or user_id}: our purge is pending but the user was not "
                              "listed; a direct read finds it in users: nothing done")
            return
        if await lifecycle.get_deleted_user(self.job.ctx.graph, user_id) is not None:
            await self._purge_deleted(user_id, subject, "completing our purge",
                                      just_deleted=False)
            return
        deleted_at = record.deleted_at or self.job.now
        if self.job.now - deleted_at < LAG_GRACE:
            self.job.run.skip("purge-user", subject, "deleted moments ago and not visible yet: "
                              "the next run checks again")
            return
        self.job.note("purged", user_id, source="verified gone", already_gone=True)
        self.job.tally.purged_ids.add(user_id)
        self.job.run.skip("purge-user", subject,
                          "already purged: direct reads find it neither in users nor in deleted "
                          "items (a run cut off after its permanent delete, or purged by someone "
                          "else)")
