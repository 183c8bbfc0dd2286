// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import "./Base.sol";

/// Offers: content (model, dataset, engine) and compute, created and retired by their owners
/// (contracts/offers.py).
library Offers {
    function createOffer(State storage s, uint64 nonce, bytes32 txHash, OfferInput calldata input) external {
        bytes20 sender = Base.begin(s, nonce);
        _checkOffer(input);
        for (uint256 i = 0; i < input.machineIds.length; i++) {
            Base.activeMachine(s, input.machineIds[i], sender);
        }
        bytes8 id = Base.newId(txHash);
        Offer storage offer = s.offers[id];
        if (offer.owner != bytes20(0)) revert IdTaken(id);
        offer.id = id;
        offer.owner = sender;
        offer.kind = input.kind;
        offer.active = true;
        offer.createdAt = Base.time();
        offer.size = input.size;
        offer.contentDigest = input.contentDigest;
        offer.name = input.name;
        offer.description = input.description;
        offer.blobUri = input.blobUri;
        offer.pricing = input.pricing;
        Restrictions storage limits = offer.restrictions;
        for (uint256 i = 0; i < input.restrictions.platforms.length; i++) {
            limits.platforms.push(input.restrictions.platforms[i]);
        }
        for (uint256 i = 0; i < input.restrictions.regions.length; i++) {
            limits.regions.push(input.restrictions.regions[i]);
        }
        limits.engineDigests = input.restrictions.engineDigests;
        limits.maxLeaseHours = input.restrictions.maxLeaseHours;
        offer.machineIds = input.machineIds;
        s.offerIds.push(id);
        emit OfferCreated(Base.seq(s), id, sender, input.kind, input.contentDigest);
    }

    /// Take an offer off the market; orders already using it carry on under its terms.
    function retireOffer(State storage s, uint64 nonce, bytes8 offerId) external {
        bytes20 sender = Base.begin(s, nonce);
        Offer storage offer = Base.offer(s, offerId);
        if (offer.owner != sender) revert NotOfferOwner(TO_RETIRE, offerId, offer.owner);
        if (!offer.active) revert OfferAlreadyRetired(offerId);
        offer.active = false;
        emit OfferRetiredEvent(Base.seq(s), offerId, sender);
    }

    /// What read_offer_terms and the Restrictions and Pricing readers check.
    function _checkOffer(OfferInput calldata input) private pure {
        Base.text(input.name, MAX_NAME, false, "name");
        Base.text(input.description, MAX_TEXT, true, "description");
        Pricing calldata pricing = input.pricing;
        if (pricing.amount > MAX_AMOUNT) revert BadField("pricing.amount");
        if (pricing.model == PricingModel.RevenueShare) {
            if (pricing.amount != 0 || pricing.shareBps < 1 || pricing.shareBps > MAX_SHARE_BPS) {
                revert BadField("pricing");
            }
        } else if (pricing.shareBps != 0 || (pricing.amount == 0) != (pricing.model == PricingModel.Free)) {
            revert BadField("pricing");
        }
        if (input.kind == OfferKind.Compute) {
            if (input.contentDigest != 0 || bytes(input.blobUri).length != 0 || input.size != 0) {
                revert BadField("content_digest");
            }
            if (input.machineIds.length == 0) revert BadField("machine_ids");
            if (pricing.model == PricingModel.RevenueShare) revert BadField("pricing");
        } else {
            Base.text(input.blobUri, MAX_URI, false, "blob_uri");
            if (input.size > MAX_AMOUNT) revert BadField("size");
            if (input.machineIds.length != 0) revert BadField("machine_ids");
        }
        Base.distinct(input.machineIds, "machine_ids");
        Base.tokens(input.restrictions.platforms, true, "restrictions.platforms");
        Base.tokens(input.restrictions.regions, true, "restrictions.regions");
        bytes32[] calldata digests = input.restrictions.engineDigests;
        if (digests.length > MAX_ITEMS) revert BadField("restrictions.engine_digests");
        for (uint256 i = 0; i < digests.length; i++) {
            for (uint256 j = 0; j < i; j++) {
                if (digests[i] == digests[j]) revert BadField("restrictions.engine_digests");
            }
        }
        if (input.restrictions.maxLeaseHours > MAX_AMOUNT) revert BadField("restrictions.max_lease_hours");
    }
}
