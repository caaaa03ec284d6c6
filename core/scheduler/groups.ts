/** Placement-group membership per host, kept current as decisions are committed. */

/** Members of one group, by host index. */
export type GroupPlacement = Map<number, string[]>;

export class GroupMembership {
  private readonly groups = new Map<string, GroupPlacement>();

  add(group: string, host: number, vm: string): void {
    let placement = this.groups.get(group);
    if (!placement) this.groups.set(group, placement = new Map());
    const members = placement.get(host);
    if (members) members.push(vm);
    else placement.set(host, [vm]);
  }

  remove(group: string, host: number, vm: string): void {
    const placement = this.groups.get(group);
    const members = placement?.get(host);
    if (!placement || !members) return;
    const at = members.indexOf(vm);
    if (at >= 0) members.splice(at, 1);
    if (!members.length) placement.delete(host);
    if (!placement.size) this.groups.delete(group);
  }

  /**
   * A copy of the group's members by host, leaving out `self`: a VM being
   * resized or migrated must not repel or attract itself. A copy, because a
   * result's reasons are written after later commits. O(members of the group).
   */
  othersOf(group: string, self: string | undefined): GroupPlacement {
    const placement = this.groups.get(group);
    if (!placement) return new Map();
    const others: GroupPlacement = new Map();
    for (const [host, members] of placement) {
      const rest = members.filter((m) => m !== self);
      if (rest.length) others.set(host, rest);
    }
    return others;
  }
}
